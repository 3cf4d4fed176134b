"""genshift: leaderboard."""
