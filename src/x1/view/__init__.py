"""See the reasoning: `x1 view` draws a trace's graphs as one offline HTML page, `x1 report` summarises eval runs."""
