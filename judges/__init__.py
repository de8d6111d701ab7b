"""What is good: verifiable judges, LM judges (ratings, observers, pairwise) and the preference maths."""
