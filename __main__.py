"""popstack: one Pulumi stack per retail event. See README.md."""

from components.program import run

run()
