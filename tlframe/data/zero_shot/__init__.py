"""Zero-shot side information and the seen/unseen split of a domain."""
