"""learnfeed: the personalized learning feed, the reference backend built on cellwork."""
