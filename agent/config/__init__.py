"""Site configuration: YAML with positions, typed models, precise errors."""
