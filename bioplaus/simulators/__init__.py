"""Simulators: replay an exported graph (or any LIF network) outside the torch backend.

Registry group ``simulators`` (`bioplaus.registry.SIMULATORS`, entry points
``bioplaus.simulators``): ``brian2`` replays a NIR graph in Brian2 on the generic runner
`bioplaus.simulators.brian2_runner.Brian2Runner`; ``bioplaus`` runs the same graph on the
torch backend (the reference the others are compared with).
"""
