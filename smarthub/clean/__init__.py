"""Find label issues: pure ranking, scorers, the review job, keep-state and the clean session."""
