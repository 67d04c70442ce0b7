"""API room: FastAPI routers. Thin: parse the request, call a service, answer.

Every error leaves as a FHIR OperationOutcome with the right status and without a stack trace
or internal detail; every call is authenticated and runs in one unit of work with its audit.
"""
