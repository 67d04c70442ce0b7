"""Who an acting account is, as shown to others (a patient's access report, an officer's view).

Only the display name and role of an account leave this room; never a secret or a hash.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from egide.identity.models import ApiToken
from egide.ledger.report import PeopleLookup, Person, default_person, role_label


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


def people_lookup(session: Session) -> PeopleLookup:
    """Names and roles of acting accounts, for the patient's access report."""

    def lookup(user: str | None, role: str | None) -> Person:
        label = describe_account(session, user)
        if label is None:
            return default_person(user, role)
        return Person(label.name, role_label(label.role), label.department)

    return lookup
