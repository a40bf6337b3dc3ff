"""A small stack-based calculator for postfix expressions."""


class StackError(Exception):
    """Raised when an expression leaves the stack in an impossible state."""


def tokenize(expression: str) -> list[str]:
    return expression.replace("(", " ( ").replace(")", " ) ").split()


def evaluate_postfix(expression: str) -> float:
    stack: list[float] = []
    operators = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "/": lambda a, b: a / b,
    }
    for token in tokenize(expression):
        if token in operators:
            if len(stack) < 2:
                raise StackError(f"operator {token!r} needs two operands")
            right = stack.pop()
            left = stack.pop()
            stack.append(operators[token](left, right))
        else:
            stack.append(float(token))
    if len(stack) != 1:
        raise StackError(f"expression left {len(stack)} values on the stack")
    return stack[0]


def infix_to_postfix(expression: str) -> str:
    precedence = {"+": 1, "-": 1, "*": 2, "/": 2}
    output: list[str] = []
    pending: list[str] = []
    for token in tokenize(expression):
        if token in precedence:
            while pending and precedence.get(pending[-1], 0) >= precedence[token]:
                output.append(pending.pop())
            pending.append(token)
        elif token == "(":
            pending.append(token)
        elif token == ")":
            while pending and pending[-1] != "(":
                output.append(pending.pop())
            if not pending:
                raise StackError("unbalanced closing parenthesis")
            pending.pop()
        else:
            output.append(token)
    while pending:
        token = pending.pop()
        if token == "(":
            raise StackError("unbalanced opening parenthesis")
        output.append(token)
    return " ".join(output)


if __name__ == "__main__":
    for text in ["1 + 2 * 3", "(1 + 2) * 3", "10 / 4 - 1"]:
        postfix = infix_to_postfix(text)
        print(f"{text:>12} -> {postfix:<12} = {evaluate_postfix(postfix)}")
