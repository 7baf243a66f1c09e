"""The demo and its parts: a private broker, the platform's view, the demo run.

Kept light on purpose: ``edge_agent.demo.broker`` and ``.platform`` import
neither the daemon nor numba, so tools and tests that only need a broker stay
small (a second process mapping LLVM would keep the agent from releasing it,
see ``edge_agent.memory``).
"""
