"""The integrator behind :func:`ntkcheck.dynamics.flows.ode_flow`: the polar field, the step budget, the
decoupled blocks and the stages integrate / sample / project."""
