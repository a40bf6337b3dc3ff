"""The reference study's claims checked against a study's own measurements, in plain words.

Every finding is judged against a control that could have failed, with its uncertainty:
- loss: MoE (and top-2) minus the matched dense run, paired bootstrap interval over eval
  documents;
- collapse: the no-LB run over the threshold for `patience` consecutive router-log steps while
  the LB run never was; the finding names every MoE setting the two arms differ in;
- specialization, per layer, by its source: "made by the router" when the trained router beats
  the distribution of gates drawn as the init draws them on the same trained body (the gate
  null, `GateNull`: the stricter of the plain and balanced rank tests, Holm over every (arm,
  layer) test the finding scans), beats its own init gate on that body (`router_made`: a body
  co-adapts with a gate that never learns, which the gate null alone took for the router in
  5 of 24 frozen-router runs, docs/testing.md), and the model's routing rose over step 0;
  "kept by the router" when it beats both without the rise; "from the representation" when
  the model's routing rose but the router did not beat both; "reduced by training" when it
  fell below the step-0 model's. Neither gate control decides alone. Every NMI difference is
  bias-corrected (`nmi_bias`).
Each variant maps to one result per seed (the same order as `seeds`). With two or more seeds a
finding's number is the mean over seeds with a t interval over the seeds that adds the document
variance they share (`moectl.analysis.seeds`), and `seed_verdicts` counts the seeds giving each
verdict; one seed's interval is over documents only and says nothing about another seed. With
fewer than `MIN_DOCUMENTS` eval documents in a domain there is no verdict: "too few documents",
with the counts. When the honest answer is "no effect at this scale", the text says so, with the
numbers.

One module per job: `claims` gathers the findings, `loss` and `collapse` judge those claims,
`layer_sources` judges each layer's source over seeds and `specialization` words that finding;
`seed_combination` combines a paired difference over seeds and `documents` says when too few
eval documents allow no verdict.
"""
