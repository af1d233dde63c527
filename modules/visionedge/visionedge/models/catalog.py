"""Built-in models and media: manifests shipped with the package, files fetched by pinned sha256."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from visionedge.errors import ModelError
from visionedge.models.manifest import ModelManifest, parse_manifest


@dataclass(frozen=True, slots=True)
class Asset:
    """A file the project never commits: where it comes from and what it must hash to."""

    name: str
    size: int
    sha256: str
    url: str | None
    """None when no public copy exists; only a mirror can provide it."""
    kind: str = "models"


_WINML = "https://raw.githubusercontent.com/microsoft/Windows-Machine-Learning/155b5eeb1f48b49235f31ef3a68db0bd8707ce89"
_DARKNET = "https://raw.githubusercontent.com/pjreddie/darknet/61c9d02ec461e30d55762ec7669d6a1d3c356fb2"
_OPENCV = "https://raw.githubusercontent.com/opencv/opencv/4.6.0/samples/data"

ASSETS: dict[str, Asset] = {a.name: a for a in (
    Asset("squeezenet1.1_fp16.onnx", 2484091, "21f25e3d9254af93e6218a359469fac714a017b3f9035c0f5c4acbf9a3ff7233",
          f"{_WINML}/SharedContent/models/SqueezeNet_fp16.onnx"),
    Asset("squeezenet1.1_fp32.onnx", 4953070, "fb3d4ce21a98a2cccfd73cbdb05b11f9d8424a85426bd76dcf9aacd0d7cdad64", None),
    Asset("yolox_nano.onnx", 3660092, "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14",
          "https://raw.githubusercontent.com/Kazuhito00/YOLOX-ONNX-TFLite-Sample/"
          "3d4f1119d0694200671c08069ecb847aa0d8495a/model/yolox_nano.onnx"),
    Asset("yolov3-tiny-coco.onnx", 35401646, "ef12caf6c0699786cca5b33868579ae3892e0ae702f0e6f34a86642f044e8ac6", None),
    Asset("tinyyolov2-8.onnx", 63480982, "583fb7fdc948435ceac9fa82efc7708701efe8382a859a3dd46526b155f5f2ae",
          "https://github.com/onnx/models/raw/main/validated/vision/object_detection_segmentation/"
          "tiny-yolov2/model/tinyyolov2-8.onnx"),
    Asset("imagenet_labels.txt", 21675, "4eb3da435cf544e4a6f390f62c84cb9c9bb68cf8b14e97f8a063452382e5efd2",
          f"{_OPENCV}/dnn/classification_classes_ILSVRC2012.txt"),
    Asset("coco.names", 625, "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84",
          f"{_DARKNET}/data/coco.names"),
    Asset("voc.names", 135, "f14861775969fd006b382e005f96dc811ef062ea4a37356efb70d7775e90f743",
          f"{_DARKNET}/data/voc.names"),
    Asset("vtest.avi", 8131690, "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
          f"{_OPENCV}/vtest.avi", "media"),
    Asset("messi5.jpg", 72937, "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9",
          f"{_OPENCV}/messi5.jpg", "media"),
    Asset("squirrel.jpg", 62311, "20bb6e8ae96918a36c9886b6d48e54eedeb3948591e1485c206bc1dc60c8dc8b",
          f"{_OPENCV}/squirrel_cls.jpg", "media"),
    Asset("dog_bicycle_car.jpg", 163759, "5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866",
          f"{_DARKNET}/data/dog.jpg", "media"),
    Asset("person_dog_horse.jpg", 113880, "cdcbab947e46110fc2b77784ac54ddbbab2640f1e44cb5e91fc8984a9793a7d1",
          f"{_DARKNET}/data/person.jpg", "media"),
    Asset("kitten_224.png", 56761, "e49fb5cd0c31b07984784e50a809825370d8adeac31c9f86ff396f64da635010",
          "https://raw.githubusercontent.com/microsoft/Windows-Machine-Learning/"
          "6916d37a45b3efe1f7a4c0dbd8d5a8437e919002/SharedContent/media/kitten_224.png", "media"),
    Asset("fish_224.png", 134422, "5dc87a520293463e60023ae4070e475c2712c8aba77ecf43432d3d946c6d1bcc",
          "https://raw.githubusercontent.com/microsoft/Windows-Machine-Learning/"
          "6f1359effa3ca31ffe9c7c5e2fdae1f1fd9d81ce/SharedContent/media/fish.png", "media"),
    Asset("golden_retriever.jpg", 212647, "0f15cf1d0a2de14f6b09486920e32aca1fc01610db8f6f86e0c5776ff7d0c5c5",
          "https://raw.githubusercontent.com/microsoft/Windows-Machine-Learning/"
          "3115fa650999c2a66041a9dfa262095fd699d724/Samples/WinMLSamplesGallery/WinMLSamplesGallery/dog.jpg",
          "media"),
)}

SAMPLE_VIDEO = "vtest.avi"
DEFAULT_MODEL = "squeezenet"


def builtin_names() -> list[str]:
    """Names of the models shipped with the package."""
    folder = resources.files("visionedge.models") / "builtin"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def builtin_manifest(name: str) -> ModelManifest:
    """The shipped manifest for a built-in model name."""
    resource = resources.files("visionedge.models") / "builtin" / f"{name}.yaml"
    if not resource.is_file():
        raise ModelError(f"unknown model {name!r}: built-in models are {', '.join(builtin_names())}, "
                         "or give a path to an .onnx file with a manifest beside it")
    return parse_manifest(yaml.safe_load(resource.read_text(encoding="utf-8")), f"built-in {name}")


def assets_for(manifest: ModelManifest) -> list[Asset]:
    """The catalog entries a built-in manifest needs (model and labels)."""
    return [ASSETS[f] for f in (manifest.file, manifest.labels) if f in ASSETS]


def default_mirrors(start: Path | None = None) -> list[Path]:
    """shared/models and shared/media of the nearest ancestor that has them (the workplace's local mirror)."""
    found: list[Path] = []
    bases = [(start or Path.cwd()).resolve(), Path(__file__).resolve()]
    for base in bases:
        for ancestor in [base, *base.parents]:
            shared = ancestor / "shared"
            if (shared / "models").is_dir():
                found += [shared / "models", shared / "media"]
                break
    return list(dict.fromkeys(found))
