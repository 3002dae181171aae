"""Composable pieces that are not an algorithm (scaling, weight decay). Public names are re-exported by ``adamx``."""
