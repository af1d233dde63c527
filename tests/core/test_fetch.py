"""Getting models and media: mirror first, verified by sha256, and bounded downloads over real HTTP."""

from __future__ import annotations

import hashlib
import os
import ssl
from pathlib import Path

import pytest
from visionedge.download import DownloadPolicy, download, sha256_file
from visionedge.errors import FetchError
from visionedge.models.catalog import ASSETS
from visionedge.models.fetch import MIRROR_ENV, Fetcher
from visionedge.urls import redact_url
from visionedge_devhub.broker import free_port
from visionedge_devhub.certs import generate_certs

from .support import FileServer, Route

BODY = os.urandom(10_000)
BODY_SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def offline_env(cli_env, tmp_path) -> dict[str, str]:
    """A CLI environment with its own empty data dir and mirror, whose internet is a refused proxy port."""
    env = {k: v for k, v in cli_env.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")}
    proxy = f"http://127.0.0.1:{free_port()}"
    env.update(HTTP_PROXY=proxy, HTTPS_PROXY=proxy, http_proxy=proxy, https_proxy=proxy)
    (tmp_path / "empty-mirror").mkdir()
    env[MIRROR_ENV] = str(tmp_path / "empty-mirror")
    env["VISIONEDGE_DATA_DIR"] = str(tmp_path / "data")
    return env


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line or " ERROR " in line]


def test_models_fetch_copies_from_the_mirror_and_verifies(run_cli, offline_env, mirror_dirs, tmp_path):
    """`visionedge models fetch NAMES --media --mirror DIR` fills the cache from the mirror with verified files."""
    mirrors = [arg for d in mirror_dirs for arg in ("--mirror", str(d))]
    done = run_cli("models", "fetch", "squeezenet", "squeezenet-fp32", "yolox-nano", "yolov3-tiny", "--media",
                   *mirrors, env=offline_env)
    assert done.returncode == 0, done.stderr
    cache = tmp_path / "data" / "cache"
    wanted = ["squeezenet1.1_fp16.onnx", "squeezenet1.1_fp32.onnx", "yolox_nano.onnx", "yolov3-tiny-coco.onnx",
              "imagenet_labels.txt", "coco.names", "vtest.avi", "kitten_224.png", "dog_bicycle_car.jpg"]
    for name in wanted:
        asset = ASSETS[name]
        path = cache / asset.kind / name
        assert f"ok      {name} -> {path}" in done.stdout.splitlines()
        assert sha256_file(path) == asset.sha256
    assert not list(cache.rglob("*.part"))


def test_models_fetch_without_a_mirror_says_where_to_put_the_file(run_cli, offline_env):
    """A mirror-only model with no mirror gives a one-line reason naming the file and the fix, and exit code 1."""
    done = run_cli("--log-level", "WARNING", "models", "fetch", "yolov3-tiny", env=offline_env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert (f"error: yolov3-tiny-coco.onnx has no public download URL and is not in any mirror "
            f"({offline_env[MIRROR_ENV]}); copy it into a mirror folder and pass --mirror DIR or set "
            f"{MIRROR_ENV}") in done.stderr.splitlines()


def test_tiny_yolov2_cannot_be_fetched_here_and_says_why_in_one_line(run_cli, offline_env, cli_env):
    """tiny-yolov2 has no mirror copy and no network here: exit non-zero with one error line, no traceback."""
    offline_env[MIRROR_ENV] = cli_env[MIRROR_ENV]  # the real mirror: it has voc.names but not the model
    done = run_cli("--log-level", "WARNING", "models", "fetch", "tiny-yolov2", env=offline_env)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = _error_lines(done.stderr)
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: cannot download https://github.com/onnx/models/")
    assert "tinyyolov2-8.onnx" in errors[0]


def test_mirror_copy_with_the_wrong_sha256_is_refused_and_removed(tmp_path):
    """A damaged file in a mirror never reaches the cache; the reason names the mirror file and both hashes."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    asset = ASSETS["coco.names"]
    bad = mirror / asset.name
    bad.write_bytes(b"x" * asset.size)  # right size, wrong content
    fetcher = Fetcher(tmp_path / "cache", [mirror])
    with pytest.raises(FetchError) as err:
        fetcher.ensure(asset)
    actual = hashlib.sha256(bad.read_bytes()).hexdigest()
    assert str(err.value) == f"{bad} (mirror): sha256 {actual[:12]}… does not match the pinned {asset.sha256[:12]}…"
    assert not fetcher.path(asset).exists()
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_models_fetch_with_a_damaged_mirror_fails_in_one_line(run_cli, offline_env, tmp_path):
    """The CLI reports a damaged mirror copy as one error line and exit code 1."""
    mirror = tmp_path / "bad-mirror"
    mirror.mkdir()
    (mirror / "yolov3-tiny-coco.onnx").write_bytes(b"not a model")
    done = run_cli("--log-level", "WARNING", "models", "fetch", "yolov3-tiny", "--mirror", mirror, env=offline_env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert (f"error: {mirror}/yolov3-tiny-coco.onnx (mirror): size 11 bytes, expected "
            f"{ASSETS['yolov3-tiny-coco.onnx'].size}") in done.stderr.splitlines()


def test_http_download_with_insecure_http_allowed_verifies(file_server, tmp_path):
    """With allow_insecure_http a plain-http download completes, matches its sha256 and leaves no .part file."""
    file_server.routes["/model.onnx"] = Route(body=BODY)
    dest = tmp_path / "model.onnx"
    policy = DownloadPolicy(allow_insecure_http=True)
    assert download(file_server.url("/model.onnx"), dest, policy, sha256=BODY_SHA, size=len(BODY)) == dest
    assert dest.read_bytes() == BODY
    assert not dest.with_name("model.onnx.part").exists()


def test_plain_http_is_refused_by_default_before_connecting(file_server, tmp_path):
    """The default policy refuses http:// with the exact reason, and the server never sees a request."""
    file_server.routes["/model.onnx"] = Route(body=BODY)
    url = file_server.url("/model.onnx")
    with pytest.raises(FetchError) as err:
        download(url, tmp_path / "model.onnx", DownloadPolicy(), sha256=BODY_SHA)
    assert str(err.value) == (f"plain http is not allowed ({url}): use https, or set local.allow_insecure_http "
                              "for development")
    assert file_server.requests == []


def test_http_404_is_reported_with_status_and_url(file_server, tmp_path):
    """A missing file gives 'HTTP 404 Not Found for URL'."""
    url = file_server.url("/missing.onnx")
    with pytest.raises(FetchError) as err:
        download(url, tmp_path / "m.onnx", DownloadPolicy(allow_insecure_http=True))
    assert str(err.value) == f"HTTP 404 Not Found for {url}"
    assert not (tmp_path / "m.onnx").exists()


def test_download_over_the_size_limit_is_refused(file_server, tmp_path):
    """Over max_bytes is refused whether the server declares the length, hides it, or the catalog declares it."""
    policy = DownloadPolicy(allow_insecure_http=True, max_bytes=4096)
    file_server.routes["/declared"] = Route(body=BODY)
    file_server.routes["/streamed"] = Route(body=BODY, send_length=False)
    with pytest.raises(FetchError) as err:
        download(file_server.url("/declared"), tmp_path / "a", policy)
    assert str(err.value) == f"{file_server.url('/declared')} is 10000 bytes, over the limit of 4096 bytes"
    with pytest.raises(FetchError) as err:
        download(file_server.url("/streamed"), tmp_path / "b", policy)
    assert str(err.value) == f"{file_server.url('/streamed')} exceeds the download limit of 4096 bytes"
    with pytest.raises(FetchError) as err:
        download(file_server.url("/declared"), tmp_path / "c", policy, size=10_000)
    assert str(err.value) == "declared size 10000 bytes exceeds the download limit of 4096 bytes"
    assert not any(p.name in ("a", "b", "c") for p in tmp_path.iterdir())


@pytest.mark.parametrize("route", [Route(body=BODY, stall_after=1000), Route(stall_before_headers=True)],
                         ids=["stall-in-body", "stall-before-headers"])
@pytest.mark.timeout(30)
def test_stalling_server_times_out_with_the_reason(file_server, tmp_path, route):
    """A server that goes silent (before the headers or in the body) ends in a timeout reason, not a hang."""
    file_server.routes["/slow"] = route
    policy = DownloadPolicy(allow_insecure_http=True, connect_timeout_s=5, read_timeout_s=0.5, retry_initial_s=0.05)
    with pytest.raises(FetchError) as err:
        download(file_server.url("/slow"), tmp_path / "slow", policy, sha256=BODY_SHA)
    assert str(err.value) == f"timed out downloading {file_server.url('/slow')} (connect 5 s, read 0.5 s)"
    assert not (tmp_path / "slow").exists()


def test_download_that_does_not_match_its_sha256_is_deleted(file_server, tmp_path):
    """A served file with the wrong content is refused and neither the file nor its .part is kept."""
    file_server.routes["/model.onnx"] = Route(body=BODY)
    url = file_server.url("/model.onnx")
    with pytest.raises(FetchError) as err:
        download(url, tmp_path / "model.onnx", DownloadPolicy(allow_insecure_http=True), sha256="0" * 64)
    assert str(err.value) == f"{url}: sha256 {BODY_SHA[:12]}… does not match the pinned 000000000000…"
    assert list(tmp_path.iterdir()) == []


def test_host_outside_the_allow_list_is_refused(file_server, tmp_path):
    """allowed_hosts limits where models may come from."""
    policy = DownloadPolicy(allow_insecure_http=True, allowed_hosts=("models.example.com",))
    with pytest.raises(FetchError) as err:
        download(file_server.url("/model.onnx"), tmp_path / "m", policy)
    assert str(err.value) == "host '127.0.0.1' is not in the allowed hosts (models.example.com)"


def test_download_errors_never_show_url_credentials(file_server, tmp_path):
    """A URL with user:password@ and a token query appears redacted in the error."""
    url = f"http://alice:s3cret@127.0.0.1:{file_server.port}/missing?token=t0ken"
    with pytest.raises(FetchError) as err:
        download(url, tmp_path / "m", DownloadPolicy(allow_insecure_http=True))
    assert str(err.value) == f"HTTP 404 Not Found for http://***@127.0.0.1:{file_server.port}/missing?***"
    assert "s3cret" not in str(err.value)
    assert "t0ken" not in str(err.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("rtsp://admin:hunter2@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
    ("https://user@example.com/a.onnx?sig=abc", "https://***@example.com/a.onnx?***"),
    ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x"),
])
def test_redact_url_hides_user_password_and_query(url, shown):
    """redact_url keeps scheme, host, port and path, and hides user:password and the query string."""
    assert redact_url(url) == shown


def test_fetcher_uses_the_cached_copy_without_the_mirror(fetcher, tmp_path):
    """Once verified in the cache, an asset is served from there even when no mirror is configured."""
    asset = ASSETS["voc.names"]
    cached = fetcher.ensure(asset)
    offline = Fetcher(fetcher.cache_dir, [tmp_path / "nowhere"])
    assert offline.ensure(asset) == cached


def test_a_damaged_cached_file_is_fetched_again(tmp_path, mirror_dirs):
    """A cached file that no longer verifies is replaced from the mirror."""
    fetcher = Fetcher(tmp_path / "cache", list(mirror_dirs))
    asset = ASSETS["coco.names"]
    path = fetcher.ensure(asset)
    path.write_text("tampered\n", encoding="utf-8")
    fresh = Fetcher(tmp_path / "cache", list(mirror_dirs))
    assert sha256_file(fresh.ensure(asset)) == asset.sha256


def test_cache_path_layout(fetcher):
    """Models live under cache/models and media under cache/media."""
    assert fetcher.path(ASSETS["yolox_nano.onnx"]) == fetcher.cache_dir / "models" / "yolox_nano.onnx"
    assert fetcher.path(ASSETS["vtest.avi"]) == Path(fetcher.cache_dir) / "media" / "vtest.avi"


def test_an_extra_ca_bundle_adds_to_the_system_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two servers, one signed by a CA in the (stand-in) system store, one by the extra local.ca_bundle CA: with
    the bundle both download, without it only the first; a CA in neither is refused with the reason."""
    system = generate_certs(tmp_path / "system-ca", "127.0.0.1")
    extra = generate_certs(tmp_path / "extra-ca", "127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(system.ca_cert))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    servers = []
    for certs in (system, extra):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.server_cert, certs.server_key)
        server = FileServer(tls=context)
        server.routes["/model.onnx"] = Route(body=BODY)
        servers.append(server)
    try:
        with_extra = DownloadPolicy(ca_bundle=extra.ca_cert)
        for n, server in enumerate(servers):
            dest = tmp_path / f"with-extra-{n}.onnx"
            assert download(server.url("/model.onnx"), dest, with_extra, sha256=BODY_SHA).read_bytes() == BODY
        assert download(servers[0].url("/model.onnx"), tmp_path / "system-only.onnx", DownloadPolicy(),
                        sha256=BODY_SHA).exists()
        with pytest.raises(FetchError) as err:
            download(servers[1].url("/model.onnx"), tmp_path / "untrusted.onnx", DownloadPolicy(), sha256=BODY_SHA)
        assert str(err.value) == f"cannot download {servers[1].url('/model.onnx')}: SSLError"
    finally:
        for server in servers:
            server.close()


def test_an_unreadable_ca_bundle_is_named_in_one_line(tmp_path: Path) -> None:
    """A local.ca_bundle that is not PEM fails the download with the file named, before any connection."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n", encoding="utf-8")
    with pytest.raises(FetchError, match=rf"^local\.ca_bundle {bundle} cannot be loaded as PEM CA certificates: "):
        download("https://127.0.0.1:9/model.onnx", tmp_path / "m.onnx", DownloadPolicy(ca_bundle=bundle))


def test_transient_failures_are_retried_and_the_download_resumes(file_server, tmp_path):
    """A 503, then a connection reset half-way: the third attempt asks only for the rest (Range) and completes."""
    big = os.urandom(1_000_000)
    file_server.routes["/model.onnx"] = Route(body=big, failures=["503", "reset"])
    policy = DownloadPolicy(allow_insecure_http=True, retry_initial_s=0.05)
    dest = download(file_server.url("/model.onnx"), tmp_path / "model.onnx", policy,
                    sha256=hashlib.sha256(big).hexdigest())
    assert dest.read_bytes() == big
    ranges = [headers.get("Range") for path, headers in file_server.requests if path == "/model.onnx"]
    assert ranges[:2] == [None, None]
    assert len(ranges) == 3
    assert ranges[2] is not None
    assert 0 < int(ranges[2][6:-1]) < len(big)


def test_a_server_that_stays_unavailable_fails_after_three_attempts_and_a_404_at_once(file_server, tmp_path):
    """503 on every try: the error after the third attempt; 404 is final on the first."""
    file_server.routes["/busy.onnx"] = Route(body=BODY, failures=["503"] * 5)
    policy = DownloadPolicy(allow_insecure_http=True, retry_initial_s=0.05)
    with pytest.raises(FetchError, match=r"^HTTP 503 Service Unavailable for "):
        download(file_server.url("/busy.onnx"), tmp_path / "busy.onnx", policy, sha256=BODY_SHA)
    with pytest.raises(FetchError, match=r"^HTTP 404 Not Found for "):
        download(file_server.url("/missing.onnx"), tmp_path / "missing.onnx", policy, sha256=BODY_SHA)
    paths = [path for path, _ in file_server.requests]
    assert (paths.count("/busy.onnx"), paths.count("/missing.onnx")) == (3, 1)


CONCURRENT_FETCH = """
import sys, time
from pathlib import Path
from visionedge.models.catalog import ASSETS
from visionedge.models.fetch import Fetcher
cache, mirror, start = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
fetcher = Fetcher(cache, [mirror])
time.sleep(max(0.0, start - time.time()))
print(fetcher.ensure(ASSETS["yolov3-tiny-coco.onnx"]))
"""


def test_processes_sharing_one_cache_fetch_the_same_model_at_once(mirror_dirs, tmp_path):
    """Several modules on one cache volume (fleet up, or a host's shared cache) start together: each gets the
    verified file; none reads another's half-written copy (a fixed .part name once made them collide)."""
    import subprocess
    import sys
    import time

    mirror = next(m for m in mirror_dirs if (m / "yolov3-tiny-coco.onnx").is_file())
    start = time.time() + 3.0
    children = [subprocess.Popen([sys.executable, "-c", CONCURRENT_FETCH, str(tmp_path / "cache"), str(mirror),
                                  str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(6)]
    results = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
        assert out.strip().endswith("yolov3-tiny-coco.onnx")
    asset = ASSETS["yolov3-tiny-coco.onnx"]
    assert sha256_file(tmp_path / "cache" / asset.kind / asset.name) == asset.sha256
    assert not list((tmp_path / "cache").rglob("*.part"))
