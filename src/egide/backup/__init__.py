"""Backup room: encrypted, verified backups and restore drills. Empty until its issue; present
so the layer contract holds."""
