"""Rolling reports: a Report model built from the local store or Log Analytics, and its renderers."""

FORMATS = ("text", "markdown", "html", "json", "csv")
