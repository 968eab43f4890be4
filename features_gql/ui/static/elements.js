// Builds DOM nodes from data. Text is always set as text, never parsed as HTML: the
// page's Content-Security-Policy requires Trusted Types, and nothing here needs them.

/**
 * h("button", {type: "button", onclick: f}, "Save") -> <button type="button">Save</button>
 * Booleans set properties (hidden, checked, disabled), functions named on* listen,
 * strings and numbers set attributes; null, undefined and false children are skipped.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (typeof value === "function" && key.startsWith("on")) {
      element.addEventListener(key.slice(2), value);
    } else if (typeof value === "boolean") {
      element[key] = value;
    } else if (key === "class") {
      element.className = value;
    } else {
      element.setAttribute(key, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

/** A labelled input: [label, input], the label naming the input for assistive tech. */
export function field(id, label, props = {}) {
  return [h("label", { for: id }, label), h("input", { id, name: id, ...props })];
}

/** Replace everything in `element` with `children`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

let counter = 0;
/** An id unique in this page, for labels that must name their control. */
export function uniqueId(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** A time as the person's locale writes it, from an ISO string. */
export function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}
