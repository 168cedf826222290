// TopicTree keeps the latest message of every topic seen and draws them as
// a tree of topic levels. Drawing is batched (at most every 200 ms), so a
// busy broker does not redraw the page per message.
const PREVIEW = 80;

export class TopicTree {
  constructor(root, onSelect) {
    this.root = root;
    this.onSelect = onSelect;
    this.latest = new Map(); // topic → {payload, qos, retain, properties, at, count}
    this.top = newNode("");
    this.collapsed = new Set();
    this.timer = null;
    this.draw();
  }

  update(topic, msg) {
    const old = this.latest.get(topic);
    msg.count = old ? old.count + 1 : 1;
    this.latest.set(topic, msg);
    if (!old) {
      let n = this.top;
      const levels = topic.split("/");
      levels.forEach((level, i) => {
        let c = n.children.get(level);
        if (!c) {
          c = newNode(levels.slice(0, i + 1).join("/"));
          c.name = level;
          n.children.set(level, c);
        }
        n = c;
      });
      n.leaf = true;
    }
    this.schedule();
  }

  get(topic) {
    return this.latest.get(topic);
  }

  clear() {
    this.latest.clear();
    this.top = newNode("");
    this.draw();
  }

  schedule() {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.draw();
    }, 200);
  }

  draw() {
    const count = document.getElementById("tree-count");
    if (count) count.textContent = `${this.latest.size} topics`;
    if (this.latest.size === 0) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No messages yet on the watched topics.";
      this.root.replaceChildren(p);
      return;
    }
    this.root.replaceChildren(this.list(this.top));
  }

  list(node) {
    const ul = document.createElement("ul");
    const names = [...node.children.keys()].sort();
    for (const name of names) ul.append(this.item(node.children.get(name)));
    return ul;
  }

  item(node) {
    const li = document.createElement("li");
    const row = document.createElement("div");
    row.className = "node";
    row.dataset.path = node.path;
    const hasKids = node.children.size > 0;
    const open = !this.collapsed.has(node.path);
    const toggle = document.createElement("span");
    toggle.className = "toggle";
    toggle.textContent = hasKids ? (open ? "▾" : "▸") : "·";
    if (hasKids) {
      toggle.addEventListener("click", () => {
        if (open) this.collapsed.add(node.path);
        else this.collapsed.delete(node.path);
        this.draw();
      });
    }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = node.name === "" ? "(empty)" : node.name;
    row.append(toggle, name);
    const msg = this.latest.get(node.path);
    if (msg) {
      row.classList.add("leaf");
      row.dataset.topic = node.path;
      const v = document.createElement("span");
      v.className = "value";
      v.textContent = preview(msg.payload);
      const c = document.createElement("span");
      c.className = "count";
      c.textContent = msg.count > 1 ? `×${msg.count}` : "";
      row.append(v, c);
      row.addEventListener("click", () => this.onSelect(node.path));
    } else if (hasKids) {
      name.addEventListener("click", () => toggle.click());
    }
    li.append(row);
    if (hasKids && open) li.append(this.list(node));
    return li;
  }
}

function newNode(path) {
  return { path, name: path, children: new Map(), leaf: false };
}

function preview(bytes) {
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.slice(0, PREVIEW * 4));
    const one = text.replace(/\s+/g, " ");
    return one.length > PREVIEW ? one.slice(0, PREVIEW) + "…" : one;
  } catch {
    return `(${bytes.length} bytes binary)`;
  }
}
