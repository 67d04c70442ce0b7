"""A synthetic demonstration clinic, generated as FHIR R4 resources.

`generate_clinic` builds, from a seed and a date, a made-up clinic: its departments, staff,
patients and their encounters, observations, conditions, prescriptions and appointments. Every
person, number and address in it is invented; the output is deterministic so demonstrations,
tests and benchmarks can be reproduced exactly. Pure: standard library and `egide.core` only.
"""

from egide.cli.demo.generator import Clinic, StaffMember, generate_clinic

__all__ = ["Clinic", "StaffMember", "generate_clinic"]
