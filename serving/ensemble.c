/* A binary:logistic tree ensemble walked in C: serving.tree_eval's arithmetic, without its Python.
 *
 * serving/native.py compiles this file (the system's C compiler, -std=c11, no fast-math, no
 * contraction: every float operation rounds to float32 as written) and serving.tree_eval uses it
 * when it is there. Under load the generated Python evaluator costs the model server ~18 µs a
 * request on the slower VMs, most of it its code evicted from the CPU caches between requests
 * (benchmarks/README.md, Serving, 2026-12-08); this walk is a few hundred comparisons on arrays.
 *
 *   build(left, right, feature, value, default_left, roots, base_margin, width) -> capsule
 *       int32 / int32 / int32 / float32 / uint8 arrays (bytes) of every node of every tree, the
 *       first node of each tree (int32), the float32 base margin, the feature count. A node is a
 *       leaf when left is -1; value is its threshold (split) or its leaf value. Children must come
 *       after their parent in their own tree: ValueError otherwise, and Python answers instead.
 *   predict(capsule, rows) -> list[float]
 *       rows: sequences of `width` numbers (float32 values, NaN for missing); one probability each.
 *
 * The same decisions and sums as serving.tree_eval (whose docstring says why they are XGBoost's):
 * left when x < threshold, NaN following the node's default; the margin starts at the base margin
 * and adds each tree's leaf in tree order in float32; the probability is
 * 1 / (expf(min(-margin, 88.7)) + 1) in float32, with the C library's expf.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CAPSULE_NAME "sparkmaker.ensemble"
#define MAX_WIDTH 4096

typedef struct {
    Py_ssize_t trees, nodes, width;
    float base_margin;
    int32_t *roots, *left, *right, *feature;
    float *value;
    uint8_t *default_left;
} Ensemble;

static void ensemble_free(Ensemble *e) {
    if (e == NULL) return;
    free(e->roots); free(e->left); free(e->right); free(e->feature); free(e->value); free(e->default_left);
    free(e);
}

static void capsule_destructor(PyObject *capsule) {
    ensemble_free((Ensemble *)PyCapsule_GetPointer(capsule, CAPSULE_NAME));
}

static void *copy_of(Py_buffer *b) {
    void *p = malloc(b->len > 0 ? (size_t)b->len : 1);
    if (p != NULL && b->len > 0) memcpy(p, b->buf, (size_t)b->len);
    return p;
}

static int check(Ensemble *e) {
    /* Every tree's nodes lie between its root and the next tree's, children after parents. */
    for (Py_ssize_t t = 0; t < e->trees; t++) {
        int32_t first = e->roots[t];
        int32_t end = t + 1 < e->trees ? e->roots[t + 1] : (int32_t)e->nodes;
        if (first < 0 || first >= end || end > e->nodes) return 0;
        for (int32_t n = first; n < end; n++) {
            if (e->left[n] == -1) continue;
            if (e->left[n] <= n || e->left[n] >= end || e->right[n] <= n || e->right[n] >= end) return 0;
            if (e->feature[n] < 0 || e->feature[n] >= e->width) return 0;
        }
    }
    return 1;
}

static PyObject *build(PyObject *self, PyObject *args) {
    Py_buffer left, right, feature, value, default_left, roots;
    float base_margin;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*fn", &left, &right, &feature, &value, &default_left, &roots,
                          &base_margin, &width))
        return NULL;
    PyObject *result = NULL;
    Ensemble *e = calloc(1, sizeof(Ensemble));
    Py_ssize_t nodes = left.len / 4;
    if (e == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (left.len % 4 || right.len != left.len || feature.len != left.len || value.len != left.len ||
        default_left.len != nodes || roots.len % 4 || roots.len == 0 || nodes == 0 || nodes > INT32_MAX ||
        width < 1 || width > MAX_WIDTH) {
        PyErr_SetString(PyExc_ValueError, "ragged or empty ensemble arrays");
        goto done;
    }
    e->trees = roots.len / 4;
    e->nodes = nodes;
    e->width = width;
    e->base_margin = base_margin;
    e->roots = copy_of(&roots);
    e->left = copy_of(&left);
    e->right = copy_of(&right);
    e->feature = copy_of(&feature);
    e->value = copy_of(&value);
    e->default_left = copy_of(&default_left);
    if (!e->roots || !e->left || !e->right || !e->feature || !e->value || !e->default_left) {
        PyErr_NoMemory();
        goto done;
    }
    if (!check(e)) {
        PyErr_SetString(PyExc_ValueError, "not trees whose children follow their parents");
        goto done;
    }
    result = PyCapsule_New(e, CAPSULE_NAME, capsule_destructor);
    if (result != NULL) e = NULL;  /* the capsule owns it */
done:
    ensemble_free(e);
    PyBuffer_Release(&left); PyBuffer_Release(&right); PyBuffer_Release(&feature);
    PyBuffer_Release(&value); PyBuffer_Release(&default_left); PyBuffer_Release(&roots);
    return result;
}

static float probability(const Ensemble *e, const double *x) {
    float margin = e->base_margin;
    for (Py_ssize_t t = 0; t < e->trees; t++) {
        int32_t n = e->roots[t];
        while (e->left[n] != -1) {
            double v = x[e->feature[n]];
            if (isnan(v))
                n = e->default_left[n] ? e->left[n] : e->right[n];
            else
                n = v < (double)e->value[n] ? e->left[n] : e->right[n];
        }
        margin = margin + e->value[n];
    }
    float exponent = -margin < 88.7f ? -margin : 88.7f;
    float denominator = expf(exponent) + 1.0f;
    return 1.0f / denominator;
}

static PyObject *predict(PyObject *self, PyObject *args) {
    PyObject *capsule, *rows;
    if (!PyArg_ParseTuple(args, "OO", &capsule, &rows)) return NULL;
    Ensemble *e = PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (e == NULL) return NULL;
    PyObject *sequence = PySequence_Fast(rows, "rows must be a sequence");
    if (sequence == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    PyObject *answers = PyList_New(count);
    double x[MAX_WIDTH];
    for (Py_ssize_t r = 0; answers != NULL && r < count; r++) {
        PyObject *row = PySequence_Fast(PySequence_Fast_GET_ITEM(sequence, r), "a row must be a sequence");
        if (row == NULL) goto fail;
        if (PySequence_Fast_GET_SIZE(row) != e->width) {
            PyErr_Format(PyExc_ValueError, "a row has %zd values, the model %zd features",
                         PySequence_Fast_GET_SIZE(row), e->width);
            Py_DECREF(row);
            goto fail;
        }
        PyObject **items = PySequence_Fast_ITEMS(row);
        for (Py_ssize_t i = 0; i < e->width; i++) {
            x[i] = PyFloat_AsDouble(items[i]);
            if (x[i] == -1.0 && PyErr_Occurred()) {
                Py_DECREF(row);
                goto fail;
            }
        }
        Py_DECREF(row);
        PyObject *answer = PyFloat_FromDouble((double)probability(e, x));
        if (answer == NULL) goto fail;
        PyList_SET_ITEM(answers, r, answer);
    }
    Py_DECREF(sequence);
    return answers;
fail:
    Py_XDECREF(answers);
    Py_DECREF(sequence);
    return NULL;
}

static PyMethodDef methods[] = {
    {"build", build, METH_VARARGS, "The ensemble's arrays -> a capsule for predict."},
    {"predict", predict, METH_VARARGS, "(capsule, rows) -> one float32 probability per row, as floats."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "sparkmaker_ensemble", NULL, -1, methods};

PyMODINIT_FUNC PyInit_sparkmaker_ensemble(void) { return PyModule_Create(&module); }
