"""Configuration: Fluent Bit classic and YAML formats, one model, validation."""
