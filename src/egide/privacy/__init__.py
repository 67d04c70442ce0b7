"""Privacy room: GDPR workflows (articles 15-21 and 30), consent registry, erasure within legal
retention by crypto-shredding. Empty until its issue; present so the layer contract holds."""
