"""Who an acting account is, as shown to others (a patient's access report, an officer's view).

Only the display name and role of an account leave this room; never a secret or a hash.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from egide.identity.models import ApiToken


@dataclass(frozen=True)
class AccountLabel:
    name: str
    role: str
    department: str | None = None


def describe_account(session: Session, account_id: str | None) -> AccountLabel | None:
    """The label of an API token (accounts and departments arrive with the identity issue)."""
    if not account_id:
        return None
    token = session.get(ApiToken, account_id)
    if token is None:
        return None
    return AccountLabel(name=token.name, role=token.role)
