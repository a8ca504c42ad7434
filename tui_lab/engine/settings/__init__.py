"""Every setting the user gives, declared once and parsed once;
presets and the last used settings."""
