"""The multitasking Hebbian network: couplings, Monte Carlo, mean-field dynamics, theory."""
