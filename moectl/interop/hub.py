"""`moectl export --push-to-hub REPO`: an export folder uploaded to the Hugging Face hub.

huggingface_hub does the work (`create_repo`, then `upload_folder`) and finds the token where it
always looks (HF_TOKEN, then `huggingface-cli login`'s stored token); moectl reads no token
itself. A failure (no network, no token, no permission) is a HubError: one line, exit 1, since
the export on disk is fine and only the upload failed.
"""

from __future__ import annotations

from pathlib import Path

from moectl.errors import MoectlError


class HubError(MoectlError):
    """An upload to the hub that failed after the export was written."""

    exit_code = 1


def push_to_hub(folder: Path, repo_id: str, *, private: bool = False) -> str:
    """Upload the export `folder` to the model repo `repo_id` (created if missing); returns the
    URL of the commit."""
    import huggingface_hub

    try:
        huggingface_hub.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = huggingface_hub.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=f"Upload {Path(folder).name} with moectl export",
        )
    except Exception as exc:  # the hub raises HTTP, connection, auth and validation errors
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise HubError(
            f"pushing {folder} to the hub repo {repo_id} failed: {reason}",
            hint="the export on disk is complete; log in (`hf auth login` or HF_TOKEN) and "
            f"upload it again with `hf upload {repo_id} {folder}`",
        ) from None
    return str(getattr(info, "commit_url", info))
