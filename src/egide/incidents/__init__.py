"""Incidents room: incident register, the 72-hour notification clock (GDPR articles 33-34),
affected-patient queries. Empty until its issue; present so the layer contract holds."""
