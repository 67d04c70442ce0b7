"""Containment of a suspect account: what a critical alert may do at once, automatically.

Security role: a stolen password or an insider copying records does its damage in minutes; a
security officer reads the queue in hours. The administrator may therefore choose (settings
`detect_response`) what a new critical alert does to the account concerned, before anyone
looks (OWASP ASVS 5.0 V7.4.2: the application can terminate all active sessions of an
account; NIST SP 800-63B-4 section 4.1, re-authentication when risk rises):

- `revoke_sessions`: every web session ends and the account's OAuth tokens are revoked;
- `require_step_up`: sessions stay, but every act that needs a recent second factor asks for
  it again, and apps must be authorised again (their tokens revoked);
- `disable_account`: no more sign-in; sessions and tokens revoked (as `disable_account`).

An API token (a machine credential) cannot step up: any response revokes it. Each step is
appended to the ledger under the detector's name with the alert's id, so the account's owner
and the officer can see why it happened. Functions never commit.

Containment must not become a weapon: an alert built on failed sign-ins can be provoked by
anyone who knows an e-mail address, so for those (`credential_stuffing`) disabling is
downgraded to revoking sessions; and the accounts that defend the system (administrator,
security officer, data protection officer) are never disabled automatically, only signed
out, so an attacker cannot lock the defenders out.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from egide.core.clock import Clock
from egide.core.errors import Conflict
from egide.core.principal import Principal
from egide.identity import oauth
from egide.identity.accounts import disable_account
from egide.identity.factors import audit
from egide.identity.models import Account, ApiToken, WebSession
from egide.identity.sessions import revoke_all_sessions
from egide.ledger.service import Act, Action, append

REVOKE_SESSIONS = "revoke_sessions"
REQUIRE_STEP_UP = "require_step_up"
DISABLE_ACCOUNT = "disable_account"
# Service accounts are the hospital's own jobs: an alert about them goes to a person, never to
# an automatic lock-out that would stop admissions or laboratory feeds.
_EXEMPT_ROLES = frozenset({"service"})
_DEFENDERS = frozenset({"admin", "dpo", "security_officer"})
_PROVOKABLE_KINDS = frozenset({"credential_stuffing"})


def contain(
    session: Session,
    *,
    user_id: str,
    kind: str,
    actions: Sequence[str],
    reason: str,
    clock: Clock,
    actor: Principal,
) -> list[str]:
    """Apply `actions` to the account (or API token) `user_id`; returns what was done, in
    words, for the alert (empty when the id is no account or token, or is exempt)."""
    if not actions:
        return []
    account = session.get(Account, user_id[:36])
    if account is not None:
        if account.role in _EXEMPT_ROLES:
            return []
        if DISABLE_ACCOUNT in actions and (kind in _PROVOKABLE_KINDS or account.role in _DEFENDERS):
            actions = [a for a in actions if a != DISABLE_ACCOUNT] + [REVOKE_SESSIONS]
        return _contain_account(session, account, actions, reason, clock, actor)
    token = session.get(ApiToken, user_id[:36])
    if token is None or token.revoked_at is not None or token.role in _EXEMPT_ROLES:
        return []
    token.revoked_at = clock.now()
    session.flush()
    append(
        session,
        principal=actor,
        clock=clock,
        act=Act(
            Action.TOKEN_REVOKE,
            resource_type="ApiToken",
            resource_id=token.id,
            reasons=(reason, "an API token cannot step up: revoked"),
        ),
    )
    return ["API token revoked"]


def _contain_account(  # noqa: PLR0917 - private, one call site
    session: Session,
    account: Account,
    actions: Sequence[str],
    reason: str,
    clock: Clock,
    actor: Principal,
) -> list[str]:
    done: list[str] = []
    if DISABLE_ACCOUNT in actions:
        try:
            disable_account(session, email=account.email, clock=clock, actor=actor, reason=reason)
        except Conflict:
            return done  # already disabled: nothing more to do
        done.append("account disabled, its sessions and app tokens revoked")
        return done
    if REVOKE_SESSIONS in actions:
        sessions = revoke_all_sessions(
            session, account_id=account.id, clock=clock, reason=reason[:64], actor=actor
        )
        tokens = oauth.revoke_account_tokens(
            session, account_id=account.id, clock=clock, reason=reason, actor=actor
        )
        done.append(f"{sessions} session(s) and {tokens} app token(s) revoked")
    elif REQUIRE_STEP_UP in actions:
        live = session.scalars(
            select(WebSession)
            .where(WebSession.account_id == account.id, WebSession.revoked_at.is_(None))
            .with_for_update()
        ).all()
        for row in live:
            row.mfa_at = None  # every act that needs a recent second factor asks again
        session.flush()
        tokens = oauth.revoke_account_tokens(
            session, account_id=account.id, clock=clock, reason=reason, actor=actor
        )
        audit(
            session,
            clock=clock,
            principal=actor,
            action=Action.STEP_UP_REQUIRED,
            account=account,
            reasons=(reason, f"{len(live)} session(s) must step up again"),
        )
        done.append(f"step-up required on {len(live)} session(s); {tokens} app token(s) revoked")
    return done
