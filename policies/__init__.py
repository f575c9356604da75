"""The popstack CrossGuard policy pack.

The rules are plain functions over `ResourceView` objects (`policies.view`), so the
offline `popstack plan` (through `policies.rules.evaluate_recording`) and the pack that
`pulumi preview --policy-pack policies` starts (`policies/__main__.py`) run the same code.
"""
