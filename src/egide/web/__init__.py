"""Web room: server-rendered pages (Jinja2 + htmx) for patients, clinicians, the security
officer and the administrator. Empty until the identity issue brings the sign-in pages; the
package exists so the layer contract (DESIGN.md) is enforced from the start."""
