"""Web room: server-rendered pages (Jinja2, no JavaScript framework).

Today: sign-in (password, TOTP or recovery code, first TOTP enrolment), invitation, account
and session list, password change (`views`), with their cookies, CSRF and header protections
(`security`). The pages for patients, clinicians, the security officer and the administrator
come with their issues. The composition root mounts them (`egide.app`).
"""
