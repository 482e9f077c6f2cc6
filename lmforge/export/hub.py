"""`--push_to_hub REPO`: upload an exported folder with `huggingface_hub`.

lmforge runs offline (`HF_HUB_OFFLINE=1` unless the user says otherwise); passing `--push_to_hub`
is the explicit permission to go online for this one upload. Network and auth failures become one
line naming the repo and the cause.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmforge.errors import LmforgeError


def push_folder(folder: Path, repo_id: str, token: str | None, private: bool) -> str:
    """Create `repo_id` if needed and upload `folder`; returns the repo URL."""
    try:
        import huggingface_hub
        from huggingface_hub import HfApi
    except ImportError:
        raise LmforgeError("--push_to_hub needs huggingface_hub: pip install huggingface_hub") from None
    offline = huggingface_hub.constants.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = False  # the user asked for this upload explicitly
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token or os.environ.get("HF_TOKEN"))
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model")
    except Exception as e:  # network, auth, permission: all user-fixable, reported in one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LmforgeError(
            f"--push_to_hub {repo_id}: upload failed ({type(e).__name__}: {first[:200]}); "
            f"the export itself is complete in {folder}"
        ) from None
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = offline
    return str(url)
