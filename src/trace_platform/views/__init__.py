"""How results and progress are shown to people, shared by the CLI and Lite (neither
imports the other's commands). Imports stay light: the CLI lists commands through these."""
