"""Losses and the stage objectives built on them (nn.Modules: `forward(batch) -> loss`); each docstring states its maths."""
