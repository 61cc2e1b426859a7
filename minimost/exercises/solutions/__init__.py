"""Reference solutions to `minimost.exercises`. Read them after trying; the tests check them against `minimost`."""
