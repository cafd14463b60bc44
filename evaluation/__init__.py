"""Matting metrics, inference, scoring and export (metrics need no torch).

Public API: none yet; metrics and evaluation arrive with their issues.
"""
