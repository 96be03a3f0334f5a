"""rtgrasp appliance: the on-robot core. Contracts here need only numpy."""
