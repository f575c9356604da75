"""The event calendar's Lambda: opens and closes the doors at the window's times."""
