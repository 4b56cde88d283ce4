"""See DESIGN.md; filled by later issues."""
