"""The training layer under rules and plugins: hooks, the task a kind trains, the optimisation.

It imports neither `bioplaus.rules` nor `bioplaus.plugins`; both build on it.
"""
