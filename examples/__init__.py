"""Runnable examples of iocpsvc contexts and codecs."""
