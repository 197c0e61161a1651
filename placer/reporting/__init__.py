"""What a person reads: the report folder, its Markdown summary, charts, and progress bars."""
