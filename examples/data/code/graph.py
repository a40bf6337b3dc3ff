"""Breadth-first and Dijkstra shortest paths on a small weighted graph."""

import heapq
from collections import defaultdict, deque


def build_graph(edges):
    graph = defaultdict(list)
    for start, end, weight in edges:
        graph[start].append((end, weight))
        graph[end].append((start, weight))
    return graph


def bfs_order(graph, source):
    seen = {source}
    order = []
    queue = deque([source])
    while queue:
        node = queue.popleft()
        order.append(node)
        for neighbour, _ in sorted(graph[node]):
            if neighbour not in seen:
                seen.add(neighbour)
                queue.append(neighbour)
    return order


def dijkstra(graph, source):
    distances = {source: 0}
    previous = {}
    heap = [(0, source)]
    while heap:
        distance, node = heapq.heappop(heap)
        if distance > distances.get(node, float("inf")):
            continue
        for neighbour, weight in graph[node]:
            candidate = distance + weight
            if candidate < distances.get(neighbour, float("inf")):
                distances[neighbour] = candidate
                previous[neighbour] = node
                heapq.heappush(heap, (candidate, neighbour))
    return distances, previous


def shortest_path(graph, source, target):
    distances, previous = dijkstra(graph, source)
    if target not in distances:
        return None, []
    path = [target]
    while path[-1] != source:
        path.append(previous[path[-1]])
    return distances[target], path[::-1]


if __name__ == "__main__":
    roads = build_graph([("a", "b", 4), ("a", "c", 2), ("b", "c", 1), ("b", "d", 5), ("c", "d", 8)])
    print(bfs_order(roads, "a"))
    print(shortest_path(roads, "a", "d"))
