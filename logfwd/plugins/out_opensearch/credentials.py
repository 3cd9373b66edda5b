"""Where AWS credentials come from: the standard environment variables, then the shared file.

The order is the AWS SDKs' for these two sources: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``) win; otherwise the profile
(``AWS_Profile``, default ``default``) of ``~/.aws/credentials`` (or the file named by
``AWS_SHARED_CREDENTIALS_FILE``). Instance metadata (IMDS), ECS/EKS web identity and
STS assume-role are not read: see the ``AWS_Role_ARN`` option.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from pathlib import Path

from .sigv4 import Credentials


class CredentialsError(ValueError):
    pass


def shared_file(env: Mapping[str, str]) -> Path:
    named = env.get("AWS_SHARED_CREDENTIALS_FILE")
    if named:
        return Path(named).expanduser()
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".aws" / "credentials"


def from_env(env: Mapping[str, str]) -> Credentials | None:
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, env.get("AWS_SESSION_TOKEN") or None)
    return None


def from_file(path: Path, profile: str) -> Credentials | None:
    """The profile's keys, None when the file does not exist; an error when it is unreadable or incomplete."""
    if not path.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError) as e:
        raise CredentialsError(f"cannot read {path}: {e}") from None
    if not parser.has_section(profile):
        return None
    sec = parser[profile]
    key, secret = sec.get("aws_access_key_id", "").strip(), sec.get("aws_secret_access_key", "").strip()
    if not key or not secret:
        raise CredentialsError(f"profile [{profile}] of {path} lacks aws_access_key_id or aws_secret_access_key")
    return Credentials(key, secret, sec.get("aws_session_token", "").strip() or None)


def load(profile: str, env: Mapping[str, str] | None = None) -> Credentials:
    """Credentials for signing, or a ``CredentialsError`` saying where they were looked for."""
    env = os.environ if env is None else env
    creds = from_env(env)
    if creds is not None:
        return creds
    path = shared_file(env)
    creds = from_file(path, profile)
    if creds is None:
        raise CredentialsError(
            f"no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile [{profile}] in {path}")
    return creds
