"""Reading models from the Hugging Face Hub: ``hf-hub:ORG/NAME[@REVISION]`` → the local folder of a repository
written by ``bagnet export --format hf`` (``bagnet.export`` only writes such folders)."""

from __future__ import annotations

from pathlib import Path

from .weights import WeightsError

#: Prefix of a Hugging Face Hub repository written by ``bagnet export --format hf`` (``hf-hub:ORG/NAME[@REV]``).
HF_PREFIX = "hf-hub:"


def hf_folder(spec: str) -> Path:
    """The local folder of ``hf-hub:ORG/NAME[@REVISION]``, through huggingface_hub's download and cache (offline,
    ``HF_HUB_OFFLINE=1``: the cache only)."""
    repo = spec[len(HF_PREFIX):]
    repo_id, _, revision = repo.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise WeightsError(f"{spec!r}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        raise WeightsError(f"{spec}: loading from the Hugging Face Hub needs huggingface_hub "
                           f"(pip install 'bagnet[hub]')") from None
    try:
        return Path(snapshot_download(repo_id, revision=revision or None,
                                      allow_patterns=["model.safetensors", "config.json", "README.md"]))
    except Exception as err:  # network, authorisation, missing repository or missing cache entry
        raise WeightsError(f"{spec}: could not get {repo_id} from the Hugging Face Hub or its cache "
                           f"({HF_HUB_CACHE}): {type(err).__name__}: {str(err)[:300]}") from None
