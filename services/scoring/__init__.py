"""scoring: a projection of the event stream into scorecards, rankings, accountability and reports."""
