"""Detection room: access events -> features -> detectors -> alerts. Pure (core only), so it
runs standalone over files. Empty until the detection issue; present so the layer and purity
contracts hold from the start."""
