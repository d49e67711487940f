"""nst export stage."""
