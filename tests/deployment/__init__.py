"""Contract tests of the deployment files: templates, module.json, Dockerfiles and the local compose stack."""
