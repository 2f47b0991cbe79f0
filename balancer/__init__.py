"""Core: measures imbalance and chooses moves. Pure: snapshot and options in, decisions out."""
