"""How numbers are made and kept: pose errors and AUCs (`metrics`), the protocol every number
carries (`protocol`), the test run of a checkpoint with its prediction cache (`testing`) and
the one `metrics.json` schema, its writer and its reader (`export`).

Import the pieces from their modules; this package file imports nothing, so that reading a
`metrics.json` or a protocol does not load the network.
"""
