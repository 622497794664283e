"""The league: the five ideas on one accelerator template, one set of real workloads, at matched quality.

- `template`    the accelerator template (FLAT's edge / cloud platforms, main-memory technology axis)
                and the cost of a unit of work;
- `workloads`   the real workloads and the dense, unfused work of one unit on each;
- `techniques`  where each idea applies, its knob, the attention function that runs it in a real model
                while counting its work, and the work it leaves;
- `quality`     quality of a replaced attention (encoder probe accuracy, decoder decode-step NLL);
- `experiment`  the cached runs, the quality budget and the matched knob;
- `table`       the league table, its figure and the generated paragraph per workload.
"""
