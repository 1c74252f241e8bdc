"""The seed tutorial's code, verbatim (comments translated), as a function of the manual seed.

Used to check that ``manualnn train --seed S --grad tutorial`` prints what the seed prints after
``torch.manual_seed(S)``. Returns the printed lines.
"""
import torch


def run_seed_script(seed, epoch_n=20):
    lines = []
    print = lines.append  # noqa: A001  (collect what the seed prints)
    torch.manual_seed(seed)

    batch_n = 100       # 100 samples in one batch
    labels = 1000       # 1000 features per sample
    hidden_layer = 100  # 100 features kept after the hidden layer
    output_data = 10    # 10 outputs

    x = torch.randn(batch_n, labels)
    y = torch.randn(batch_n, output_data)

    w1 = torch.randn(labels, hidden_layer)
    w2 = torch.randn(hidden_layer, output_data)

    learning_rate = 1e-6

    for epoch in range(epoch_n):
        h1 = torch.mm(x, w1)
        h1 = h1.clamp(min=0)
        y_pred = h1.mm(w2)

        loss = (y_pred - y).pow(2).sum()
        print("Epoch:{}, Loss:{:.4f}".format(epoch, loss))

        grad_y_pred = 2*(y_pred - y)
        grad_w2 = torch.mm(h1.t(), grad_y_pred)

        grad_h = grad_y_pred.clone()
        grad_h = torch.mm(grad_h, w2.t())
        grad_h.clamp_(min=0)
        grad_w1 = torch.mm(x.t(), grad_h)

        w1 -= learning_rate * grad_w1
        w2 -= learning_rate * grad_w2
    return lines
