"""Reasoning-tuning data: category taxonomy, templates, refinement turns."""

from .templates import Category, Templates, load_templates

__all__ = ["Category", "Templates", "load_templates"]
